package contract

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/domainevents/domainevents/events"
)

// A File is a generated document: its file name and its content.
type File struct {
	// Name is the file name: "<event name>.schema.json" (the name made
	// safe for file systems) or "asyncapi.json".
	Name string
	// Event is the event the file describes ("" for the AsyncAPI document).
	Event string
	// Data is the JSON document, indented, ending with a newline.
	Data []byte
}

// JSONSchemas returns the JSON Schema (2020-12) of the wire body of every
// event reg knows ([EventSchema]), one file per event, sorted by event
// name. Errors name the event and field that cannot be described.
func JSONSchemas(reg *events.Registry) ([]File, error) {
	types := reg.Types()
	if len(types) == 0 {
		return nil, errors.New("contract: the registry knows no event")
	}
	names := slices.Sorted(maps.Keys(types))
	keys := componentKeys(names)
	files := make([]File, 0, len(names))
	for _, name := range names {
		s, err := EventSchema(name, types[name])
		if err != nil {
			return nil, err
		}
		b, err := marshal(s)
		if err != nil {
			return nil, err
		}
		files = append(files, File{Name: keys[name] + ".schema.json", Event: name, Data: b})
	}
	return files, nil
}

// AsyncAPIFile is [AsyncAPI] as the file "asyncapi.json".
func AsyncAPIFile(reg *events.Registry, svc Service) (File, error) {
	b, err := AsyncAPI(reg, svc)
	if err != nil {
		return File{}, err
	}
	return File{Name: "asyncapi.json", Data: b}, nil
}

// WriteFiles writes files into dir, creating it if needed; an existing
// file of the same name is replaced.
func WriteFiles(dir string, files ...File) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("contract: %w", err)
	}
	for _, f := range files {
		if f.Name == "" || f.Name != filepath.Base(f.Name) || f.Name == "." || f.Name == ".." {
			return fmt.Errorf("contract: file name %q: want a plain file name", f.Name)
		}
		if err := os.WriteFile(filepath.Join(dir, f.Name), f.Data, 0o644); err != nil {
			return fmt.Errorf("contract: %w", err)
		}
	}
	return nil
}
