"""The pure core: events, rules, scoring, lifecycle. No I/O, no boto3, no clock."""
