package deadletter_test

import (
	"context"
	"testing"

	"github.com/domainevents/domainevents/broker/deadletter"
)

// BenchmarkSpoolPut measures fsync'd appends from 1 and from many goroutines.
func BenchmarkSpoolPut(b *testing.B) {
	for _, parallel := range []bool{false, true} {
		name := "serial"
		if parallel {
			name = "parallel"
		}
		b.Run(name, func(b *testing.B) {
			s, err := deadletter.OpenSpool(b.TempDir())
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			e := entry("order.created")
			b.ReportAllocs()
			if !parallel {
				for b.Loop() {
					if err := s.Put(context.Background(), e); err != nil {
						b.Fatal(err)
					}
				}
				return
			}
			b.SetParallelism(32)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if err := s.Put(context.Background(), e); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}
