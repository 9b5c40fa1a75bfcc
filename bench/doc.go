// Package bench holds scrapegate's performance comparisons. Its benchmarks
// (go test -bench . ./bench, or make bench) proxy the same scrape directly,
// through scrapegate and through net/http/httputil.ReverseProxy in one run,
// so their ratios are meaningful on whatever machine runs them.
package bench
