package rabbitmq

import (
	amqp "github.com/rabbitmq/amqp091-go"
)

// declareExchange declares the durable topic exchange (and its alternate
// exchange with its queue, when alternate is set), or checks that it exists
// in passive mode. The default exchange ("") is never declared.
func declareExchange(ch channel, exchange, alternate string, passive bool) error {
	if exchange == "" {
		return nil
	}
	var args amqp.Table
	if alternate != "" {
		if err := ch.ExchangeDeclare(alternate, "fanout", true, false, false, false, nil); err != nil {
			return declareErr("alternate exchange "+alternate, err)
		}
		if err := declareQueue(ch, Queue{Name: alternate, Keys: []string{""}}, alternate); err != nil {
			return err
		}
		args = amqp.Table{"alternate-exchange": alternate}
	}
	var err error
	if passive {
		err = ch.ExchangeDeclarePassive(exchange, "topic", true, false, false, false, args)
	} else {
		err = ch.ExchangeDeclare(exchange, "topic", true, false, false, false, args)
	}
	if err != nil {
		return declareErr("exchange "+exchange, err)
	}
	return nil
}

// declareQueue declares a durable queue and binds it to exchange with its
// keys (no binding when exchange is "").
func declareQueue(ch channel, q Queue, exchange string) error {
	if _, err := ch.QueueDeclare(q.Name, true, false, false, false, q.Args); err != nil {
		return declareErr("queue "+q.Name, err)
	}
	if exchange == "" {
		return nil
	}
	for _, k := range q.Keys {
		if err := ch.QueueBind(q.Name, k, exchange, false, nil); err != nil {
			return declareErr("binding "+q.Name+" <- "+k, err)
		}
	}
	return nil
}
