package funchost

import (
	"context"
	"fmt"
	"testing"
	"time"
)

func TestInvocationHistoryCap(t *testing.T) {
	iv := newInvoker(nil, 0, noLog())
	for i := range maxInvocations + 5 {
		fn := "A"
		if i%2 == 1 {
			fn = "B"
		}
		iv.record(Invocation{ID: fmt.Sprint(i), Function: fn, Status: StatusSucceeded}, noLog())
	}
	all := iv.invocations("")
	if len(all) != maxInvocations || all[0].ID != "5" || all[len(all)-1].ID != fmt.Sprint(maxInvocations+4) {
		t.Fatalf("history: got %d from %s to %s, want %d from 5 to %d", len(all), all[0].ID, all[len(all)-1].ID,
			maxInvocations, maxInvocations+4)
	}
	bs := iv.invocations("b")
	if len(bs) != maxInvocations/2 || bs[0].ID != "5" {
		t.Fatalf("filtered by b: got %d starting at %s, want %d starting at 5", len(bs), bs[0].ID, maxInvocations/2)
	}
}

func TestTrackerWait(t *testing.T) {
	var tr tracker
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := tr.wait(ctx); err != nil {
		t.Fatalf("wait with nothing in flight: %v", err)
	}
	end1, end2 := tr.begin(), tr.begin()
	end1()
	end1() // ending twice counts once
	if got := tr.count(); got != 1 {
		t.Fatalf("count: got %d, want 1", got)
	}
	short, cancelShort := context.WithTimeout(ctx, 10*time.Millisecond)
	defer cancelShort()
	if err := tr.wait(short); err == nil {
		t.Fatalf("wait with one in flight: got nil, want the context's error")
	}
	done := make(chan error, 1)
	go func() { done <- tr.wait(ctx) }()
	end2()
	if err := <-done; err != nil {
		t.Fatalf("wait after the last ended: %v", err)
	}
	end3 := tr.begin() // begin after a wait returned is fine
	end3()
}
