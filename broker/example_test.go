package broker_test

import (
	"fmt"

	"github.com/domainevents/domainevents/broker"
)

func ExampleLoadConfig() {
	vars := map[string]string{"MESSAGE_BROKER_PORT": "abc", "MESSAGE_BROKER_PASSWORD": "hunter2"}
	_, err := broker.LoadConfig(func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
	fmt.Println(err)

	cfg := broker.DefaultConfig()
	cfg.Password = broker.NewSecret("hunter2")
	fmt.Printf("%+v\n", cfg)
	// Output:
	// MESSAGE_BROKER_PORT="abc": want a port number from 1 to 65535
	// broker.Config{Enabled:false Type:rabbitmq Addrs:[localhost:5672] Username:guest Password:[redacted] VHost:/ Exchange:orders.events Topic:orders.events TLS:false ClientID:orders-service Queue: SpoolDir: CloudEventsSource:}
}
