"""Pure key builders for the single table."""

from leadflow.domain.listing import stage_partition

LEAD_SK = "LEAD"
# The tombstone an erasure leaves beside the lead's key (PK = LEAD#<id>): when, and the
# erasure's own delivery record (the CRM deletes). No address, no name: the id only.
ERASED_SK = "ERASED"


def lead_pk(lead_id: str) -> str:
    return f"LEAD#{lead_id}"


def event_sk(received_at_iso: str, event_id: str) -> str:
    return f"EVENT#{received_at_iso}#{event_id}"


def stage_gsi_pk(stage: str) -> str:
    return stage_partition(stage)


def stage_gsi_sk(entered_at_iso: str, lead_id: str) -> str:
    return f"{entered_at_iso}#{lead_id}"


def delivery_sk(move_id: str) -> str:
    """The delivery ledger's item of one move (every sink's state in it)."""
    return f"SEND#{move_id}"


def counter_pk(name: str) -> str:
    return f"COUNTER#{name}"
