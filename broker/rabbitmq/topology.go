package rabbitmq

import (
	"errors"
	"fmt"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"
)

// exchangeSpec is one exchange as the adapter declares it. A destination
// has one spec, built by [topicExchange] from the configuration and the
// connection options, and every role that touches the exchange (publisher,
// subscriber, dead-letter sink) declares that same spec: RabbitMQ refuses
// a declaration whose type or arguments differ from the exchange's.
type exchangeSpec struct {
	name      string     // "" is the default exchange: never declared
	kind      string     // "topic"; "fanout" for an alternate exchange
	args      amqp.Table // its arguments: alternate-exchange when alternate is set
	alternate string     // where what no queue is bound for goes, "" for nowhere
	passive   bool       // check that it exists instead of declaring it
}

// topicExchange is the durable topic exchange named name, with alternate
// as its alternate exchange ("" for none): the one place an exchange's
// arguments are made.
func topicExchange(name, alternate string, passive bool) exchangeSpec {
	x := exchangeSpec{name: name, kind: amqp.ExchangeTopic, alternate: alternate, passive: passive}
	if alternate != "" {
		x.args = amqp.Table{"alternate-exchange": alternate}
	}
	return x
}

// destination is the exchange of cfg.Exchange as the connection options
// have it: what [New] publishes to and [NewSubscriber] binds to, alike.
func destination(exchange string, o *connOptions) exchangeSpec {
	return topicExchange(exchange, o.alternate, o.passive)
}

// declare declares x on ch: its alternate exchange first (a durable fanout
// exchange with a queue of the same name bound to it, declared even when x
// is passive), then x itself, or checks that x exists when it is passive.
func (x exchangeSpec) declare(ch channel) error {
	if x.name == "" {
		return nil
	}
	if x.alternate != "" {
		ae := exchangeSpec{name: x.alternate, kind: amqp.ExchangeFanout}
		if err := ch.declareExchange(ae); err != nil {
			return declareErr("alternate exchange "+ae.name, err)
		}
		if err := declareBound(ch, Queue{Name: ae.name, Keys: []string{""}}, ae.name); err != nil {
			return err
		}
	}
	if err := ch.declareExchange(x); err != nil {
		return declareErr("exchange "+x.name, mismatchHint(err))
	}
	return nil
}

// errAlternateMismatch explains a refused declaration of an exchange that
// exists with another alternate exchange than the one asked for.
var errAlternateMismatch = errors.New("give every publisher and subscriber of an exchange the same WithAlternateExchange")

// mismatchHint adds errAlternateMismatch to err when RabbitMQ refused a
// declaration for a different alternate-exchange argument.
func mismatchHint(err error) error {
	var ae *amqp.Error
	if errors.As(err, &ae) && ae.Code == amqp.PreconditionFailed && strings.Contains(ae.Reason, "'alternate-exchange'") {
		return fmt.Errorf("%w (%w)", err, errAlternateMismatch)
	}
	return err
}

// declareBound declares q and binds it to exchange with each of its keys
// (no binding when exchange is "", the default exchange).
func declareBound(ch channel, q Queue, exchange string) error {
	if err := ch.declareQueue(q); err != nil {
		return declareErr("queue "+q.Name, err)
	}
	if exchange == "" {
		return nil
	}
	for _, k := range q.Keys {
		if err := ch.bind(q.Name, k, exchange); err != nil {
			return declareErr("binding "+q.Name+" <- "+k, err)
		}
	}
	return nil
}
