package kube

import (
	"fmt"
	"sync"

	"github.com/go-logr/logr"
	"github.com/rs/zerolog"
	"k8s.io/klog/v2"
)

var klogOnce sync.Once

// logClientGoTo sends client-go's own log lines (klog: a watch stream that
// broke; failed requests are logged by requestEnded) to log, so they arrive
// in the gateway's format instead of klog's text on stderr. klog is global:
// the first Cluster's logger wins.
func logClientGoTo(log zerolog.Logger) {
	klogOnce.Do(func() {
		klog.SetLogger(logr.New(&klogSink{log: log.With().Str("component", "client-go").Logger()}))
	})
}

// klogSink is a logr.LogSink over zerolog. klog's verbosity levels above 0
// are debugging detail and are dropped.
type klogSink struct {
	log    zerolog.Logger
	name   string
	values []any
}

func (s *klogSink) Init(logr.RuntimeInfo) {}

func (s *klogSink) Enabled(level int) bool { return level <= 0 }

func (s *klogSink) Info(_ int, msg string, kv ...any) {
	s.write(s.log.Info(), msg, kv)
}

func (s *klogSink) Error(err error, msg string, kv ...any) {
	s.write(s.log.Error().Err(err), msg, kv)
}

func (s *klogSink) write(e *zerolog.Event, msg string, kv []any) {
	if s.name != "" {
		e = e.Str("logger", s.name)
	}
	for _, pairs := range [][]any{s.values, kv} {
		for i := 0; i+1 < len(pairs); i += 2 {
			key := fmt.Sprint(pairs[i])
			// Errors and most client-go values have no exported fields:
			// as JSON they would be {}.
			switch v := pairs[i+1].(type) {
			case error:
				e = e.Str(key, v.Error())
			case fmt.Stringer:
				e = e.Stringer(key, v)
			case logr.Marshaler:
				e = e.Interface(key, v.MarshalLog())
			default:
				e = e.Interface(key, v)
			}
		}
	}
	e.Msg(msg)
}

func (s *klogSink) WithValues(kv ...any) logr.LogSink {
	c := *s
	c.values = append(append([]any(nil), s.values...), kv...)
	return &c
}

func (s *klogSink) WithName(name string) logr.LogSink {
	c := *s
	if c.name != "" {
		name = c.name + "/" + name
	}
	c.name = name
	return &c
}
