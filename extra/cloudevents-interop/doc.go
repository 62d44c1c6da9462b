// Package interop checks this library's CloudEvents binary mode against
// cloudevents/sdk-go, from both sides: sdk-go's Kafka (sarama) binding
// reads the records the Kafka adapter publishes, and the Kafka subscriber
// reads the records sdk-go publishes, on an in-process kfake cluster.
//
// It is a module of its own so that sdk-go stays out of the library's
// go.mod; it holds tests only. Run them with
//
//	cd extra/cloudevents-interop && go test -race ./...
package interop
