"""leadflow_infra: everything beside the Lambda code.

The local stack behind `leadflow serve` (`local`), the command line (`cli`), the
template readers (`template`), the development receivers that stand in for Slack,
HubSpot, Salesforce and webhook endpoints (`receivers`), the dead-letter tools
(`dlq`) and the demo (`demo`). It may import `leadflow`; `leadflow` never imports it.
"""
