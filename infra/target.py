"""Which leadflow a command talks to: a deployed stack (`--stack-name`: its outputs), a
bare API URL (`--url`), or the `leadflow serve` running on `--data-dir` (its
`stack.json`). One place resolves it for every command."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any


class NoTarget(SystemExit):
    pass


@dataclass
class Target:
    api_url: str | None
    table: str | None
    client: dict[str, Any] = field(default_factory=dict)  # boto3 client arguments (the local endpoint)
    queues: dict[str, str | None] = field(default_factory=dict)
    where: str = ""

    def aws(self, service: str) -> Any:
        import boto3

        return boto3.client(service, **self.client)

    def need_table(self, command: str) -> str:
        if not self.table:
            raise NoTarget(f"leadflow {command}: reads the leads table; pass --stack-name, or run it beside "
                           "`leadflow serve` (--data-dir)")
        return self.table

    def need_api(self, command: str) -> str:
        if not self.api_url:
            raise NoTarget(f"leadflow {command}: no API URL for {self.where}")
        return self.api_url


def resolve(args: Any, command: str) -> Target:
    if getattr(args, "url", None):
        return Target(api_url=args.url, table=None, where=args.url)
    if getattr(args, "stack_name", None):
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            stacks = boto3.client("cloudformation").describe_stacks(StackName=args.stack_name)["Stacks"]
        except (BotoCoreError, ClientError) as exc:
            raise NoTarget(f"leadflow {command}: {exc}") from None
        outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
        return Target(api_url=outputs.get("ApiUrl"), table=outputs.get("TableName"),
                      queues={"retry": outputs.get("HandoffRetryQueueUrl"),
                              "dead_letter": outputs.get("HandoffDeadLetterQueueUrl")},
                      where=f"stack {args.stack_name}")
    path = os.path.join(args.data_dir, "stack.json")
    try:
        with open(path, encoding="utf-8") as fh:
            info = json.load(fh)
    except (OSError, ValueError):
        raise NoTarget(f"leadflow {command}: no running leadflow serve in {args.data_dir} ({path} not found); "
                       "start one, or pass --stack-name") from None
    client = {"endpoint_url": info["endpoint_url"], "region_name": info.get("region", "us-east-1"),
              "aws_access_key_id": "testing", "aws_secret_access_key": "testing"} if info.get("endpoint_url") else {}
    return Target(api_url=info.get("api_url"), table=info.get("table"), client=client,
                  queues=info.get("queues") or {}, where=f"leadflow serve ({args.data_dir})")


class ApiError(Exception):
    def __init__(self, status: int, body: Any):
        self.status = status
        self.body = body
        message = body.get("message") if isinstance(body, dict) else str(body)
        super().__init__(f"{status}: {message}")


class Api:
    """JSON calls to the leadflow API, with its key."""

    def __init__(self, base: str, api_key: str | None = None, *, timeout: float = 30.0):
        self.base = base.rstrip("/")
        self.api_key = api_key if api_key is not None else (os.environ.get("LEADFLOW_API_KEY") or None)
        self.timeout = timeout

    def call(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"accept": "application/json", "user-agent": "leadflow-cli"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["content-type"] = "application/json"
        if self.api_key:
            headers["authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            with exc:
                raw = exc.read()
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw.decode("utf-8", "replace")[:300]
            raise ApiError(exc.code, parsed) from None
        except (OSError, ValueError) as exc:
            raise ApiError(0, {"message": f"cannot reach {self.base}: {getattr(exc, 'reason', exc)}"}) from None
