package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"

	"github.com/domainevents/domainevents/broker"
	"github.com/domainevents/domainevents/events"
	"github.com/domainevents/domainevents/events/contract"
)

// runContracts writes the contracts of the order events (see the package
// doc).
func runContracts(_ context.Context, log *slog.Logger, out io.Writer, args []string) error {
	fs := flag.NewFlagSet("domainevents contracts", flag.ContinueOnError)
	format := fs.String("format", "all", "what to write: jsonschema, asyncapi or all")
	dir := fs.String("out", "", "directory to write the files into (default: print to stdout)")
	event := fs.String("event", "", "write the JSON Schema of this event only")
	brokerType := fs.String("broker", "", "rabbitmq or kafka (default: MESSAGE_BROKER_TYPE, rabbitmq)")
	service := fs.String("service", "", "the service's name, the AsyncAPI info.title (default: MESSAGE_BROKER_CLIENT_ID, orders-service)")
	version := fs.String("version", "1.0.0", "the version of the service's API, the AsyncAPI info.version")
	topicPerEvent := fs.Bool("topic-per-event", false, "Kafka: a topic per event name (kafka.WithTopicPerEvent)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: domainevents contracts [flags]\n\n"+
			"Writes the JSON Schema (2020-12) of each order event and the AsyncAPI 3.0.0 document of the\n"+
			"service publishing them. Exchange, vhost and topic come from the MESSAGE_BROKER_* variables.\n"+
			"A service with events of its own calls package events/contract from its own code.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("contracts: unexpected argument %q", fs.Arg(0))
	}
	wantSchemas, wantAPI := *format == "jsonschema" || *format == "all", *format == "asyncapi" || *format == "all"
	if !wantSchemas && !wantAPI {
		return fmt.Errorf("contracts: --format %q: want jsonschema, asyncapi or all", *format)
	}
	if *event != "" && *format != "jsonschema" {
		return errors.New("contracts: --event selects a JSON Schema: give --format jsonschema with it")
	}
	cfg, err := broker.ConfigFromEnv()
	if err != nil {
		return fmt.Errorf("configuration: %w", err)
	}
	if *brokerType != "" {
		cfg.Type = broker.Type(*brokerType)
		if cfg.Type != broker.RabbitMQ && cfg.Type != broker.Kafka {
			return fmt.Errorf("contracts: --broker %q: want %s or %s", *brokerType, broker.RabbitMQ, broker.Kafka)
		}
	}
	if *service == "" {
		*service = cfg.ClientID
	}

	reg := events.NewRegistry()
	var files []contract.File
	if wantSchemas {
		schemas, err := contract.JSONSchemas(reg)
		if err != nil {
			return err
		}
		for _, f := range schemas {
			if *event == "" || f.Event == *event {
				files = append(files, f)
			}
		}
		if len(files) == 0 {
			return fmt.Errorf("contracts: --event %q: not an order event (known: %s, %s, %s)", *event,
				events.NameOrderCreated, events.NameOrderStatusUpdated, events.NameOrderCancelled)
		}
	}
	var api contract.File
	if wantAPI {
		if api, err = contract.AsyncAPIFile(reg, contract.Service{Title: *service, Version: *version, Broker: cfg, TopicPerEvent: *topicPerEvent}); err != nil {
			return err
		}
		files = append(files, api)
	}

	if *dir != "" {
		if err := contract.WriteFiles(*dir, files...); err != nil {
			return err
		}
		for _, f := range files {
			log.Info("contract written", "file", f.Name, "dir", *dir)
		}
		return nil
	}
	if len(files) == 1 {
		_, err := out.Write(files[0].Data)
		return err
	}
	all := make(map[string]json.RawMessage, len(files))
	for _, f := range files {
		all[f.Name] = f.Data
	}
	b, err := json.MarshalIndent(all, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(out, "%s\n", b)
	return err
}
