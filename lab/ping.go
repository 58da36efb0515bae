package lab

import (
	"errors"
	"time"
)

// ErrLoss is wrapped by Ping's error when some echo requests went
// unanswered; the PingResult is filled in all the same.
var ErrLoss = errors.New("packet loss")

// PingResult is what a ping saw.
type PingResult struct {
	Sent, Received int
	// RTTMin, RTTAvg and RTTMax are zero when nothing came back.
	RTTMin, RTTAvg, RTTMax time.Duration
	Output                 string // a transcript, for a failing test to show
}
