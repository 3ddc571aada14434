"""Create the local SQS queues from template.yaml, and keep their messages across restarts.

``AWS::SQS::Queue`` Properties and ``create_queue`` attributes are nearly the
same names, but not the same shape: the API takes every attribute as a string,
``RedrivePolicy`` as a JSON string holding the dead-letter queue's ARN (the
template has ``!GetAtt HandoffDeadLetterQueue.Arn`` instead), and a queue's
redrive target must exist before the queue naming it is created. Encryption
settings (``SqsManagedSseEnabled``, ``KmsMasterKeyId``…) mean nothing locally
and are left out.

:class:`QueueSnapshot` saves what is still in the queues (dead letters above
all) to ``<data_dir>/sqs.json`` next to the table snapshot, so a restart of
``leadflow serve`` does not lose them. The stack now journals every queue change as it
happens (:mod:`~leadflow_infra.local.persist`); this file is read once, when a data
directory kept by snapshots is first started with the journal.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leadflow_infra.local.persist import attributes_to_json, read_snapshot, write_snapshot
from leadflow_infra.local.tables import is_intrinsic

logger = logging.getLogger(__name__)

QUEUE_TYPE = "AWS::SQS::Queue"
ACCOUNT_ID = "123456789012"
SNAPSHOT_NAME = "sqs.json"

# Properties that are create_queue attributes under the same name (values sent as strings).
_ATTRIBUTES = (
    "VisibilityTimeout",
    "MessageRetentionPeriod",
    "DelaySeconds",
    "ReceiveMessageWaitTimeSeconds",
    "MaximumMessageSize",
    "FifoQueue",
    "ContentBasedDeduplication",
    "DeduplicationScope",
    "FifoThroughputLimit",
)
# Accepted and deliberately dropped: encryption has no meaning against moto.
_ENCRYPTION = ("SqsManagedSseEnabled", "KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds")
# send_message_batch limits: ten entries and 256 KiB of payload per call.
_BATCH_ENTRIES = 10
_BATCH_BYTES = 256 * 1024


@dataclass(frozen=True)
class Queue:
    """One created queue. ``dead_letter_target`` is the logical id its RedrivePolicy names, if any."""

    logical_id: str
    name: str
    url: str
    arn: str
    dead_letter_target: str | None = None


# -- template → create_queue ---------------------------------------------------------


def template_queues(template: Mapping[str, Any] | str | os.PathLike[str] | None = None) -> dict[str, dict[str, Any]]:
    """Every ``AWS::SQS::Queue`` resource of the template, by logical id.

    ``template`` is a parsed template, a path, or None for the project's template.yaml.
    """
    from leadflow_infra.template import resolve_template

    resources = resolve_template(template).get("Resources") or {}
    return {
        logical_id: dict(resource)
        for logical_id, resource in resources.items()
        if isinstance(resource, Mapping) and resource.get("Type") == QUEUE_TYPE
    }


def _get_att_arn_target(value: Any) -> str | None:
    """The logical id in ``{"Fn::GetAtt": ["X", "Arn"]}`` or ``{"Fn::GetAtt": "X.Arn"}``, else None."""
    if not isinstance(value, Mapping) or set(value) != {"Fn::GetAtt"}:
        return None
    target = value["Fn::GetAtt"]
    if isinstance(target, str):
        target = target.split(".", 1)
    if isinstance(target, list | tuple) and len(target) == 2 and target[1] == "Arn" and isinstance(target[0], str):
        return target[0]
    return None


def _redrive_policy(properties: Mapping[str, Any]) -> dict[str, Any] | None:
    policy = properties.get("RedrivePolicy")
    if policy is None:
        return None
    if isinstance(policy, str):
        policy = json.loads(policy)
    if not isinstance(policy, Mapping):
        raise ValueError(f"RedrivePolicy must be an object, not {type(policy).__name__}")
    return dict(policy)


def _dead_letter_target(logical_id: str, properties: Mapping[str, Any]) -> str | None:
    """The logical id of the queue this one's RedrivePolicy points at (None: no policy, or a literal ARN)."""
    policy = _redrive_policy(properties)
    if policy is None:
        return None
    arn = policy.get("deadLetterTargetArn")
    target = _get_att_arn_target(arn)
    if target is None and (not isinstance(arn, str) or is_intrinsic(arn)):
        raise ValueError(f"{logical_id}: deadLetterTargetArn must be !GetAtt <Queue>.Arn or a literal ARN, not {arn!r}")
    return target


def queue_name(logical_id: str, properties: Mapping[str, Any], prefix: str | None = None) -> str:
    """The local queue name: the literal QueueName, else the logical id; ``{prefix}-…`` when a prefix is given.

    A FIFO queue's name must end in ``.fifo`` (CloudFormation adds it to generated names).
    """
    name = properties.get("QueueName")
    if not isinstance(name, str) or not name:
        name = logical_id
    if prefix:
        name = f"{prefix}-{name}"
    if str(properties.get("FifoQueue", "")).lower() == "true" and not name.endswith(".fifo"):
        name += ".fifo"
    return name


def create_queue_attributes(
    logical_id: str, properties: Mapping[str, Any], arns: Mapping[str, str]
) -> dict[str, str]:
    """Translate a queue's template Properties into ``create_queue`` Attributes.

    ``arns`` maps already created logical ids to their ARNs, for ``RedrivePolicy``.
    """
    attributes: dict[str, str] = {}
    for key in _ATTRIBUTES:
        value = properties.get(key)
        if value is None or is_intrinsic(value):
            continue
        attributes[key] = str(value).lower() if isinstance(value, bool) else str(value)
    policy = _redrive_policy(properties)
    if policy is not None:
        target = _dead_letter_target(logical_id, properties)
        if target is not None:
            if target not in arns:
                raise ValueError(f"{logical_id}: RedrivePolicy targets {target}, which is not a created queue")
            policy["deadLetterTargetArn"] = arns[target]
        if "maxReceiveCount" not in policy or is_intrinsic(policy["maxReceiveCount"]):
            raise ValueError(f"{logical_id}: RedrivePolicy needs a literal maxReceiveCount")
        policy["maxReceiveCount"] = int(policy["maxReceiveCount"])
        attributes["RedrivePolicy"] = json.dumps(policy, separators=(",", ":"))
    ignored = sorted(set(properties) - set(_ATTRIBUTES) - set(_ENCRYPTION) - {"QueueName", "RedrivePolicy", "Tags"})
    if ignored:
        logger.debug("queue %s: properties not used locally: %s", logical_id, ", ".join(ignored))
    return attributes


def _creation_order(resources: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Logical ids with every redrive target before the queues naming it (template order otherwise)."""
    targets = {
        logical_id: _dead_letter_target(logical_id, resource.get("Properties") or {})
        for logical_id, resource in resources.items()
    }
    order: list[str] = []
    visiting: list[str] = []

    def visit(logical_id: str) -> None:
        if logical_id in order:
            return
        if logical_id in visiting:
            cycle = " -> ".join([*visiting[visiting.index(logical_id) :], logical_id])
            raise ValueError(f"RedrivePolicy cycle: {cycle}")
        target = targets[logical_id]
        if target is not None:
            if target not in resources:
                raise ValueError(f"{logical_id}: RedrivePolicy targets {target}, which is not an SQS queue here")
            visiting.append(logical_id)
            visit(target)
            visiting.pop()
        order.append(logical_id)

    for logical_id in resources:
        visit(logical_id)
    return order


def create_queues(
    client: Any, resources: Mapping[str, Mapping[str, Any]], *, prefix: str | None = None
) -> dict[str, Queue]:
    """Create every queue of ``resources`` (logical id → CloudFormation resource) in dependency order.

    A queue that already exists with the same attributes is reused (create_queue
    is idempotent then). Returns the queues by logical id, in creation order.
    """
    created: dict[str, Queue] = {}
    arns: dict[str, str] = {}
    for logical_id in _creation_order(resources):
        resource = resources[logical_id]
        if resource.get("Type", QUEUE_TYPE) != QUEUE_TYPE:
            raise ValueError(f"{logical_id} is a {resource.get('Type')}, not an {QUEUE_TYPE}")
        properties = resource.get("Properties") or {}
        name = queue_name(logical_id, properties, prefix)
        attributes = create_queue_attributes(logical_id, properties, arns)
        kwargs: dict[str, Any] = {"QueueName": name, "Attributes": attributes}
        tags = properties.get("Tags")
        if tags and not is_intrinsic(tags):
            kwargs["tags"] = {str(t["Key"]): str(t["Value"]) for t in tags}
        url = client.create_queue(**kwargs)["QueueUrl"]
        arn = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        arns[logical_id] = arn
        created[logical_id] = Queue(
            logical_id=logical_id,
            name=name,
            url=url,
            arn=arn,
            dead_letter_target=_dead_letter_target(logical_id, properties),
        )
        logger.debug("created queue %s (%s)", name, logical_id)
    return created


# -- snapshot ------------------------------------------------------------------------


def peek_messages(name: str, *, region: str, account_id: str = ACCOUNT_ID) -> list[dict[str, Any]] | None:
    """Every message moto holds for the queue ``name`` (visible, in flight or delayed), left untouched.

    SQS has no read-without-receiving: a receive hides the message for its
    visibility timeout and counts towards ``maxReceiveCount``, so saving the
    queues that way would push retries towards the dead-letter queue, and it
    cannot see in-flight or delayed messages at all. The moto server runs in
    this process, so its backend can be read directly instead.

    That reaches into moto's internals (checked on moto 5.2): when they do not
    have the expected shape, or the queue is not in this process, log a warning
    and return None, meaning "unknown", not "empty".
    """
    try:
        from moto.sqs.models import sqs_backends

        queue = sqs_backends[account_id][region].queues[name]
        return [
            {
                "body": message.body,
                "attributes": dict(message.message_attributes or {}),
                "group_id": message.group_id,
                "deduplication_id": message.deduplication_id,
            }
            for message in list(queue._messages)
        ]
    except Exception as exc:  # pragma: no cover - depends on moto internals
        logger.warning("cannot read the messages of queue %s from moto (%s); not saved", name, exc)
        return None


def message_attributes_from_json(attributes: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Saved message attributes → send_message's (and moto's): binary values back to bytes."""
    out: dict[str, dict[str, Any]] = {}
    for name, value in attributes.items():
        attribute = dict(value)
        if isinstance(attribute.get("BinaryValue"), str):
            attribute["BinaryValue"] = base64.b64decode(attribute["BinaryValue"])
        if attribute.get("BinaryListValues"):
            attribute["BinaryListValues"] = [
                base64.b64decode(v) if isinstance(v, str) else v for v in attribute["BinaryListValues"]
            ]
        for key in ("StringListValues", "BinaryListValues"):
            if not attribute.get(key):
                attribute.pop(key, None)
        out[name] = attribute
    return out


def _send_entry(index: int, message: Mapping[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"Id": f"m{index}", "MessageBody": message["body"], "DelaySeconds": 0}
    if message.get("attributes"):
        entry["MessageAttributes"] = message_attributes_from_json(message["attributes"])
    if message.get("group_id"):
        entry["MessageGroupId"] = message["group_id"]
        entry.pop("DelaySeconds")  # FIFO queues take no per-message delay
    if message.get("deduplication_id"):
        entry["MessageDeduplicationId"] = message["deduplication_id"]
    return entry


def _batches(messages: Iterable[Mapping[str, Any]]) -> Iterable[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    size = 0
    for index, message in enumerate(messages):
        entry = _send_entry(index, message)
        entry_size = len(entry["MessageBody"].encode("utf-8"))
        if batch and (len(batch) == _BATCH_ENTRIES or size + entry_size > _BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += entry_size
    if batch:
        yield batch


class QueueSnapshot:
    """Dump and load the messages of the given queues to ``<data_dir>/sqs.json``.

    Saved per message: body, message attributes (binary as base64) and, for
    FIFO queues, group and deduplication ids. Loading re-sends them with
    ``DelaySeconds=0``: a retry that was waiting out its backoff is simply due
    after a restart, and a message that was in flight is delivered again (SQS
    promises at-least-once delivery anyway). Message ids, receive counts and
    timestamps are new. Load into empty queues: loading twice sends twice.
    """

    def __init__(
        self,
        client: Any,
        data_dir: str | os.PathLike[str],
        queues: Mapping[str, Queue],
        *,
        region: str | None = None,
        account_id: str = ACCOUNT_ID,
    ) -> None:
        self._client = client
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / SNAPSHOT_NAME
        self._queues = dict(queues)
        self._region = region or client.meta.region_name
        self._account_id = account_id
        self._lock = threading.Lock()

    def dump(self) -> int:
        """Write the snapshot; return the number of messages saved.

        When moto's messages cannot be read, nothing is written (the previous
        snapshot stays) and 0 is returned.
        """
        with self._lock:
            saved: dict[str, list[dict[str, Any]]] = {}
            for logical_id, queue in self._queues.items():
                messages = peek_messages(queue.name, region=self._region, account_id=self._account_id)
                if messages is None:
                    return 0
                saved[logical_id] = attributes_to_json(messages)
            write_snapshot(self.path, "queues", saved)
            count = sum(len(messages) for messages in saved.values())
            logger.debug("saved %d queued messages to %s", count, self.path)
            return count

    def load(self) -> int:
        """Send every saved message back to its queue; return how many. No file, nothing to do."""
        saved = read_snapshot(self.path, "queues")
        if saved is None:
            return 0
        count = 0
        with self._lock:
            for logical_id, messages in saved.items():
                queue = self._queues.get(logical_id)
                if queue is None:
                    if messages:
                        logger.warning(
                            "snapshot has %d messages for unknown queue %s; skipped", len(messages), logical_id
                        )
                    continue
                for batch in _batches(messages):
                    response = self._client.send_message_batch(QueueUrl=queue.url, Entries=batch)
                    failed = response.get("Failed") or []
                    for failure in failed:
                        logger.error("could not restore a message to %s: %s", queue.name, failure.get("Message"))
                    count += len(batch) - len(failed)
        logger.debug("loaded %d queued messages from %s", count, self.path)
        return count
