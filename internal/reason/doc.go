// Package reason makes failures fit where space is short: [Line] writes a
// text on one bounded line (a log attribute, a dead-letter header), and
// [NewPanic] turns a recovered panic into an error whose text is such a
// line, naming the value and the frame that panicked, while its stack is
// kept aside ([Panic.PanicStack], found in an error tree by [Stacks]) to be
// logged once where the panic is handled.
package reason
