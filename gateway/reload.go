package gateway

// reloadAll checks every file the gateway reads once, logging what changed
// and what failed; a failure is logged when it first appears or changes, not
// at every check, and its end is logged too.
func (g *Gateway) reloadAll() {
	for _, r := range g.reloadables {
		changed, prevErr, err := r.Check()
		switch {
		case err != nil:
			g.metrics.reloads(r.Flag(), false).Inc()
			if err.Error() != prevErr {
				g.log.Error().Err(err).Str("flag", r.Flag()).Msg("cannot reload file: keeping the last good one in force")
			}
		case changed:
			g.metrics.reloads(r.Flag(), true).Inc()
			g.log.Info().Str("flag", r.Flag()).Strs("files", r.Paths()).Msg("reloaded changed file")
		case prevErr != "":
			g.log.Info().Str("flag", r.Flag()).Msg("file readable again, unchanged")
		}
	}
}
