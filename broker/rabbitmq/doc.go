// Package rabbitmq will be the RabbitMQ adapter of [broker.Broker], on
// github.com/rabbitmq/amqp091-go: a durable topic exchange, persistent
// messages, publisher confirms pipelined over one connection, reconnection
// with re-publishing of unconfirmed messages. It is not implemented yet (see
// the project's RabbitMQ issue); nothing here pretends to publish.
package rabbitmq
