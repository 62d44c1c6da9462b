package outbox_test

const childEnv = "OUTBOX_TEST_CHILD"

func runChild(string) int { return 2 }
