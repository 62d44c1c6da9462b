package eventbus

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/domainevents/domainevents/internal/reason"
)

// Event is what the bus carries: anything with a stable name. The order
// events in package events satisfy it.
type Event interface {
	EventName() string
}

// ErrPanic matches (errors.Is) the error a panicking handler is turned into.
var ErrPanic = errors.New("handler panicked")

// ErrNilBus is returned by [Publish] on a nil *Bus.
var ErrNilBus = errors.New("eventbus: nil *Bus")

// Bus routes events to handlers by event name. The zero value is an empty bus
// ready to use; a Bus must not be copied after first use. All methods and
// functions are safe for concurrent use: subscribing or unsubscribing while
// events are published is fine, and a publish sees the handlers that were
// subscribed when it started.
type Bus struct {
	mu     sync.Mutex // serialises writers; publishers only load table
	nextID uint64
	table  atomic.Pointer[table]
}

// table is immutable once stored: writers build a new one (subscriptions
// change rarely, events flow often, so publishing takes no lock).
type table struct {
	subs []*sub // every subscription, in subscription order
	// For each name with typed subscribers: those merged with the catch-all
	// ones, in subscription order. Few names: names/lists; many: byName too.
	names  []string
	lists  [][]*sub
	byName map[string][]*sub
	all    []*sub // catch-all subscribers only (names without typed ones)
}

type sub struct {
	id      uint64
	name    string                             // event name; "" for catch-all
	handler string                             // handler's function name, for errors
	typed   any                                // func(context.Context, E) error: the allocation-free path
	dyn     func(context.Context, Event) error // for events published as an interface, and catch-alls
}

// linearLookupMax is the number of event names up to which lookup scans a
// slice instead of hashing.
const linearLookupMax = 8

// New returns an empty bus.
func New() *Bus { return &Bus{} }

// Subscription is a registered handler. Unsubscribe removes it.
type Subscription struct {
	bus  *Bus
	id   uint64
	once sync.Once
}

// Unsubscribe removes the handler. Calling it again, or on a nil
// *Subscription, does nothing. A publish already running may still call it.
func (s *Subscription) Unsubscribe() {
	if s == nil || s.bus == nil {
		return
	}
	s.once.Do(func() {
		s.bus.update(func(subs []*sub) []*sub {
			return slices.DeleteFunc(subs, func(x *sub) bool { return x.id == s.id })
		})
	})
}

var errNilHandler = errors.New("nil handler")

// SubscribeOption configures one subscription.
type SubscribeOption func(*sub)

// Named sets the handler name that a [HandlerError] reports, e.g. "broker
// forwarder". Default: the handler function's name ("main.sendEmail").
func Named(name string) SubscribeOption {
	return func(s *sub) {
		if name != "" {
			s.handler = name
		}
	}
}

// Subscribe registers h for events of type E, routed by E's event name (the
// name the zero E reports, never the Go type name). Handlers run
// synchronously in subscription order. When E is an interface type, h gets
// every event that implements it. A nil h is not a panic: every publish of
// the event reports it as an error. Subscribe on a nil *Bus returns nil.
func Subscribe[E Event](b *Bus, h func(context.Context, E) error, opts ...SubscribeOption) *Subscription {
	var zero E
	name, ok := nameOf(zero)
	s := &sub{name: name, handler: funcName(h)}
	switch {
	case h == nil:
		s.dyn = func(context.Context, Event) error { return errNilHandler }
	case !ok:
		// E is an interface type: no single name. Take every event that
		// implements it.
		s.dyn = func(ctx context.Context, ev Event) error {
			if e, ok := ev.(E); ok {
				return h(ctx, e)
			}
			return nil
		}
	default:
		s.typed = h
		s.dyn = func(ctx context.Context, ev Event) error {
			e, ok := ev.(E)
			if !ok {
				return fmt.Errorf("handler takes %T, event is %T: two types share the name %q", zero, ev, name)
			}
			return h(ctx, e)
		}
	}
	return b.add(s, opts)
}

// nameOf returns the name the zero value of an event type reports; false
// when the type is an interface (calling the method panics).
func nameOf[E Event](e E) (name string, ok bool) {
	defer func() {
		if recover() != nil {
			name, ok = "", false
		}
	}()
	return e.EventName(), true
}

// SubscribeAll registers h for every event published on the bus, whatever its
// name or type. The broker forwarder uses it.
func SubscribeAll(b *Bus, h func(context.Context, Event) error, opts ...SubscribeOption) *Subscription {
	s := &sub{handler: funcName(h), dyn: h}
	if h == nil {
		s.dyn = func(context.Context, Event) error { return errNilHandler }
	}
	return b.add(s, opts)
}

func (b *Bus) add(s *sub, opts []SubscribeOption) *Subscription {
	if b == nil {
		return nil
	}
	for _, o := range opts {
		if o != nil {
			o(s)
		}
	}
	b.update(func(subs []*sub) []*sub {
		b.nextID++
		s.id = b.nextID
		return append(subs, s)
	})
	return &Subscription{bus: b, id: s.id}
}

// update applies f to a copy of the subscription list and stores the table
// derived from it.
func (b *Bus) update(f func([]*sub) []*sub) {
	b.mu.Lock()
	defer b.mu.Unlock()
	var old []*sub
	if t := b.table.Load(); t != nil {
		old = t.subs
	}
	subs := f(slices.Clone(old))
	t := &table{subs: subs}
	for _, s := range subs {
		if s.name == "" {
			t.all = append(t.all, s)
		} else if !slices.Contains(t.names, s.name) {
			t.names = append(t.names, s.name)
			t.lists = append(t.lists, slices.DeleteFunc(slices.Clone(subs), func(x *sub) bool {
				return x.name != "" && x.name != s.name
			}))
		}
	}
	if len(t.names) > linearLookupMax {
		t.byName = make(map[string][]*sub, len(t.names))
		for i, n := range t.names {
			t.byName[n] = t.lists[i]
		}
	}
	b.table.Store(t)
}

// lookup returns the handlers for an event name. A linear scan beats a map
// for the handful of names a service has; names are usually constants, so
// the comparison often succeeds on the pointer.
func (t *table) lookup(name string) []*sub {
	if t.byName != nil {
		if subs, ok := t.byName[name]; ok {
			return subs
		}
		return t.all
	}
	for i, n := range t.names {
		if n == name {
			return t.lists[i]
		}
	}
	return t.all
}

// Publish delivers e to every handler subscribed to e's name and to every
// catch-all handler, synchronously, in subscription order, passing ctx
// through (the bus itself does not stop on ctx; handlers decide). Every
// handler runs even when an earlier one fails or panics.
//
// It returns nil when all handlers succeeded, otherwise the failures, each a
// *HandlerError naming the event and handler, joined with errors.Join. A
// panicking handler yields a *HandlerError that matches [ErrPanic], its
// stack kept by [HandlerError.PanicStack]. Publish
// does not allocate when the handlers are typed and succeed.
func Publish[E Event](ctx context.Context, b *Bus, e E) error {
	if b == nil {
		return ErrNilBus
	}
	t := b.table.Load()
	if t == nil {
		return nil
	}
	var st publishState
	for !dispatch(ctx, t, e, &st) {
		// A handler panicked; dispatch recorded it. Go on with the next one.
	}
	if len(st.errs) == 1 {
		return st.errs[0]
	}
	return errors.Join(st.errs...)
}

// publishState lets dispatch resume after a panic, so that one deferred
// recover covers all handlers of a publish instead of one defer per handler.
type publishState struct {
	named bool
	name  string
	subs  []*sub
	next  int
	errs  []error
	boxed Event // the event as an interface, made once if a handler needs it
}

// dispatch runs the handlers from st.next on and reports whether it got to
// the end; false means a panic was recovered and recorded.
func dispatch[E Event](ctx context.Context, t *table, e E, st *publishState) (finished bool) {
	defer func() {
		if r := recover(); r != nil {
			if !st.named {
				st.errs = append(st.errs, fmt.Errorf("eventbus: the event's EventName panicked (a nil event?): %v", r))
				finished = true
				return
			}
			st.errs = append(st.errs, &HandlerError{Event: st.name, Handler: st.subs[st.next].handler,
				Err: reason.NewPanic(ErrPanic, r)})
			st.next++
		}
	}()
	if !st.named {
		st.name = e.EventName()
		st.subs = t.lookup(st.name)
		st.named = true
	}
	for ; st.next < len(st.subs); st.next++ {
		s := st.subs[st.next]
		var err error
		if h, ok := s.typed.(func(context.Context, E) error); ok {
			err = h(ctx, e)
		} else {
			if st.boxed == nil {
				st.boxed = e
			}
			err = s.dyn(ctx, st.boxed)
		}
		if err != nil {
			st.errs = append(st.errs, &HandlerError{Event: st.name, Handler: s.handler, Err: err})
		}
	}
	return true
}

// HandlerError is one handler's failure.
type HandlerError struct {
	// Event is the event name, e.g. "order.created".
	Event string
	// Handler is the handler's function name, e.g. "main.sendEmail".
	Handler string
	// Err is what the handler returned, or the recovered panic.
	Err error
}

// Error reads like: eventbus: order.created: handler main.sendEmail: smtp down.
func (e *HandlerError) Error() string {
	return "eventbus: " + e.Event + ": handler " + e.Handler + ": " + e.Err.Error()
}

// Unwrap returns the handler's error.
func (e *HandlerError) Unwrap() error { return e.Err }

// PanicStack returns the stack of the handler's goroutine when Err is a
// recovered panic, nil otherwise. Error leaves it out (it names the value
// and the frame that panicked, on one line), so that the error fits a log
// line or a dead-letter header: log the stack once where you handle the
// error. A broker subscriber does, for a bus behind bridge.NewHandler.
func (e *HandlerError) PanicStack() []byte {
	var s interface{ PanicStack() []byte }
	if errors.As(e.Err, &s) {
		return s.PanicStack()
	}
	return nil
}

func funcName(f any) string {
	v := reflect.ValueOf(f)
	if v.Kind() != reflect.Func || v.IsNil() {
		return "<nil>"
	}
	if fn := runtime.FuncForPC(v.Pointer()); fn != nil {
		return fn.Name()
	}
	return "<unknown>"
}
