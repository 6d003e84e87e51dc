"""tinyfleet's server side: fleet registry, releases, rollouts, monitoring, HTTP API and the operator CLI."""
