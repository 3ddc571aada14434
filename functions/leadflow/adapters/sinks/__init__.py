"""Sinks: where stage moves go (Slack, email, CRMs, EventBridge). The only code here that
does network I/O; each sink makes one attempt per call and classifies failures."""
