"""The leaner stand-ins for h2's and hpack's per-connection state behave as the originals do."""

from __future__ import annotations

from typing import Any

import h2.settings
import hpack
from hypothesis import given
from hypothesis import strategies as st

from trio_grpc._headers import HeaderDecoder, HeaderEncoder
from trio_grpc._transport import _LeanSettings

Codes = h2.settings.SettingCodes
# Settings h2 starts with and one it does not (MAX_CONCURRENT_STREAMS), with values valid for each.
_SETTING = st.sampled_from([Codes.HEADER_TABLE_SIZE, Codes.INITIAL_WINDOW_SIZE, Codes.MAX_CONCURRENT_STREAMS])
_OPERATION = st.one_of(
    st.tuples(st.just("set"), _SETTING, st.integers(0, 2**31 - 1)),
    st.tuples(st.just("set"), st.just(Codes.MAX_FRAME_SIZE), st.integers(16384, 2**24 - 1)),
    st.tuples(st.just("acknowledge")),
)


def observe(settings: h2.settings.Settings) -> dict[Any, Any]:
    seen: dict[Any, Any] = {}
    for key in list(settings):
        try:
            seen[key] = settings[key]
        except KeyError:
            seen[key] = "KeyError"
    return seen


def changes(changed: dict[Any, h2.settings.ChangedSetting]) -> dict[Any, tuple[Any, Any]]:
    return {key: (change.original_value, change.new_value) for key, change in changed.items()}


@given(st.booleans(), st.lists(_OPERATION, max_size=20))
def test_lean_settings_answer_as_h2s_do(client: bool, operations: list[tuple[Any, ...]]) -> None:
    initial = {Codes.MAX_HEADER_LIST_SIZE: 16384}
    theirs, ours = h2.settings.Settings(client, initial), _LeanSettings(client, initial)
    for operation in operations:
        if operation[0] == "set":
            theirs[operation[1]] = ours[operation[1]] = operation[2]
        else:
            assert changes(ours.acknowledge()) == changes(theirs.acknowledge())
        assert observe(ours) == observe(theirs)
        assert ours.initial_window_size == theirs.initial_window_size


_HEADERS = st.lists(
    st.tuples(st.sampled_from([b"a", b"b", b"x-long-name", b"grpc-status"]), st.binary(max_size=300)),
    max_size=8,
)


@given(st.lists(_HEADERS, max_size=30), st.sampled_from([256, 4096]))
def test_hpack_tables_as_lists_keep_the_peer_in_step(
    blocks: list[list[tuple[bytes, bytes]]], size: int
) -> None:
    """Our encoder against hpack's decoder, and hpack's encoder against ours: small tables evict often."""
    ours_out, theirs_in = HeaderEncoder(), hpack.Decoder()
    theirs_out, ours_in = hpack.Encoder(), HeaderDecoder()
    ours_out.header_table_size = theirs_out.header_table_size = size
    for headers in blocks:
        assert theirs_in.decode(ours_out.encode(headers), raw=True) == headers
        assert ours_in.decode(theirs_out.encode(headers), raw=True) == headers
    assert list(ours_out.header_table.dynamic_entries) == list(theirs_out.header_table.dynamic_entries)
