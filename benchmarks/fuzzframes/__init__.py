"""Fuzz frames for the wire protocol: valid seeds of every message type, mutators, oracles.

Shared by `tests/test_fuzz.py` (hypothesis drives it through `st.randoms()`, so failures
shrink and replay) and `benchmarks/fuzz.py` (the long run, plain `random.Random`). In parts:

- `seeds`: one valid message of every type, and the values at the edges of every field;
- `mutators`: field, byte and image-aware edits of the seeds (`fuzz_frame`);
- `oracles`: what the local decoders must make of a frame (`check_decode`, `check_image`);
- `session`: a raw session against a real edge, every answer held to the oracles.
"""

from hybridsr import protocol as wire

from .mutators import (
    Path,
    Rng,
    fuzz_frame,
    mutate_bytes,
    mutate_fields,
    mutate_image_bytes,
    paths,
    random_value,
    replace_at,
    value_at,
)
from .oracles import BROKE, REPLY_LIMIT, Verdict, check_decode, check_image, images_of
from .seeds import (
    EDGE_FLOATS,
    EDGE_INTS,
    EDGE_STRS,
    EDGE_VALUES,
    FIELD_NAMES,
    MESSAGE_TYPES,
    MSGPACK_MARKERS,
    PROFILE,
    client_seed_messages,
    seed_images,
    seed_messages,
)
from .session import JOB_REFUSALS, Broken, FuzzSession, cheap

__all__ = [
    "BROKE", "EDGE_FLOATS", "EDGE_INTS", "EDGE_STRS", "EDGE_VALUES", "FIELD_NAMES",
    "JOB_REFUSALS", "MESSAGE_TYPES", "MSGPACK_MARKERS", "PROFILE", "REPLY_LIMIT", "Broken",
    "FuzzSession", "Path", "Rng", "Verdict", "check_decode", "check_image", "cheap",
    "client_seed_messages", "fuzz_frame", "images_of", "mutate_bytes", "mutate_fields",
    "mutate_image_bytes", "paths", "random_value", "replace_at", "seed_images", "seed_messages",
    "value_at", "wire",
]
