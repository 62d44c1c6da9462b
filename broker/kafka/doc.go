// Package kafka will be the Kafka adapter of [broker.Broker], on
// github.com/IBM/sarama: acks=all with the idempotent producer, pipelined
// publishes, the order id as record key with Java-compatible murmur2
// partitioning. It is not implemented yet (see the project's Kafka issue);
// nothing here pretends to publish.
package kafka
