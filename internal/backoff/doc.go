// Package backoff computes exponential backoff with full jitter, shared by
// the adapters' reconnect loops and the retry layer.
package backoff
