from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PayloadType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPRESSABLE: _ClassVar[PayloadType]

class GrpclbRouteType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GRPCLB_ROUTE_TYPE_UNKNOWN: _ClassVar[GrpclbRouteType]
    GRPCLB_ROUTE_TYPE_FALLBACK: _ClassVar[GrpclbRouteType]
    GRPCLB_ROUTE_TYPE_BACKEND: _ClassVar[GrpclbRouteType]
COMPRESSABLE: PayloadType
GRPCLB_ROUTE_TYPE_UNKNOWN: GrpclbRouteType
GRPCLB_ROUTE_TYPE_FALLBACK: GrpclbRouteType
GRPCLB_ROUTE_TYPE_BACKEND: GrpclbRouteType

class BoolValue(_message.Message):
    __slots__ = ("value",)
    VALUE_FIELD_NUMBER: _ClassVar[int]
    value: bool
    def __init__(self, value: _Optional[bool] = ...) -> None: ...

class Payload(_message.Message):
    __slots__ = ("type", "body")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    type: PayloadType
    body: bytes
    def __init__(self, type: _Optional[_Union[PayloadType, str]] = ..., body: _Optional[bytes] = ...) -> None: ...

class EchoStatus(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    message: str
    def __init__(self, code: _Optional[int] = ..., message: _Optional[str] = ...) -> None: ...

class SimpleRequest(_message.Message):
    __slots__ = ("response_type", "response_size", "payload", "fill_username", "fill_oauth_scope", "response_compressed", "response_status", "expect_compressed", "fill_server_id", "fill_grpclb_route_type", "orca_per_query_report")
    RESPONSE_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    FILL_USERNAME_FIELD_NUMBER: _ClassVar[int]
    FILL_OAUTH_SCOPE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_COMPRESSED_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_STATUS_FIELD_NUMBER: _ClassVar[int]
    EXPECT_COMPRESSED_FIELD_NUMBER: _ClassVar[int]
    FILL_SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    FILL_GRPCLB_ROUTE_TYPE_FIELD_NUMBER: _ClassVar[int]
    ORCA_PER_QUERY_REPORT_FIELD_NUMBER: _ClassVar[int]
    response_type: PayloadType
    response_size: int
    payload: Payload
    fill_username: bool
    fill_oauth_scope: bool
    response_compressed: BoolValue
    response_status: EchoStatus
    expect_compressed: BoolValue
    fill_server_id: bool
    fill_grpclb_route_type: bool
    orca_per_query_report: TestOrcaReport
    def __init__(self, response_type: _Optional[_Union[PayloadType, str]] = ..., response_size: _Optional[int] = ..., payload: _Optional[_Union[Payload, _Mapping]] = ..., fill_username: _Optional[bool] = ..., fill_oauth_scope: _Optional[bool] = ..., response_compressed: _Optional[_Union[BoolValue, _Mapping]] = ..., response_status: _Optional[_Union[EchoStatus, _Mapping]] = ..., expect_compressed: _Optional[_Union[BoolValue, _Mapping]] = ..., fill_server_id: _Optional[bool] = ..., fill_grpclb_route_type: _Optional[bool] = ..., orca_per_query_report: _Optional[_Union[TestOrcaReport, _Mapping]] = ...) -> None: ...

class SimpleResponse(_message.Message):
    __slots__ = ("payload", "username", "oauth_scope", "server_id", "grpclb_route_type", "hostname")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    OAUTH_SCOPE_FIELD_NUMBER: _ClassVar[int]
    SERVER_ID_FIELD_NUMBER: _ClassVar[int]
    GRPCLB_ROUTE_TYPE_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    payload: Payload
    username: str
    oauth_scope: str
    server_id: str
    grpclb_route_type: GrpclbRouteType
    hostname: str
    def __init__(self, payload: _Optional[_Union[Payload, _Mapping]] = ..., username: _Optional[str] = ..., oauth_scope: _Optional[str] = ..., server_id: _Optional[str] = ..., grpclb_route_type: _Optional[_Union[GrpclbRouteType, str]] = ..., hostname: _Optional[str] = ...) -> None: ...

class StreamingInputCallRequest(_message.Message):
    __slots__ = ("payload", "expect_compressed")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    EXPECT_COMPRESSED_FIELD_NUMBER: _ClassVar[int]
    payload: Payload
    expect_compressed: BoolValue
    def __init__(self, payload: _Optional[_Union[Payload, _Mapping]] = ..., expect_compressed: _Optional[_Union[BoolValue, _Mapping]] = ...) -> None: ...

class StreamingInputCallResponse(_message.Message):
    __slots__ = ("aggregated_payload_size",)
    AGGREGATED_PAYLOAD_SIZE_FIELD_NUMBER: _ClassVar[int]
    aggregated_payload_size: int
    def __init__(self, aggregated_payload_size: _Optional[int] = ...) -> None: ...

class ResponseParameters(_message.Message):
    __slots__ = ("size", "interval_us", "compressed")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_US_FIELD_NUMBER: _ClassVar[int]
    COMPRESSED_FIELD_NUMBER: _ClassVar[int]
    size: int
    interval_us: int
    compressed: BoolValue
    def __init__(self, size: _Optional[int] = ..., interval_us: _Optional[int] = ..., compressed: _Optional[_Union[BoolValue, _Mapping]] = ...) -> None: ...

class StreamingOutputCallRequest(_message.Message):
    __slots__ = ("response_type", "response_parameters", "payload", "response_status", "orca_oob_report")
    RESPONSE_TYPE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_STATUS_FIELD_NUMBER: _ClassVar[int]
    ORCA_OOB_REPORT_FIELD_NUMBER: _ClassVar[int]
    response_type: PayloadType
    response_parameters: _containers.RepeatedCompositeFieldContainer[ResponseParameters]
    payload: Payload
    response_status: EchoStatus
    orca_oob_report: TestOrcaReport
    def __init__(self, response_type: _Optional[_Union[PayloadType, str]] = ..., response_parameters: _Optional[_Iterable[_Union[ResponseParameters, _Mapping]]] = ..., payload: _Optional[_Union[Payload, _Mapping]] = ..., response_status: _Optional[_Union[EchoStatus, _Mapping]] = ..., orca_oob_report: _Optional[_Union[TestOrcaReport, _Mapping]] = ...) -> None: ...

class StreamingOutputCallResponse(_message.Message):
    __slots__ = ("payload",)
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: Payload
    def __init__(self, payload: _Optional[_Union[Payload, _Mapping]] = ...) -> None: ...

class ReconnectParams(_message.Message):
    __slots__ = ("max_reconnect_backoff_ms",)
    MAX_RECONNECT_BACKOFF_MS_FIELD_NUMBER: _ClassVar[int]
    max_reconnect_backoff_ms: int
    def __init__(self, max_reconnect_backoff_ms: _Optional[int] = ...) -> None: ...

class ReconnectInfo(_message.Message):
    __slots__ = ("passed", "backoff_ms")
    PASSED_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_MS_FIELD_NUMBER: _ClassVar[int]
    passed: bool
    backoff_ms: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, passed: _Optional[bool] = ..., backoff_ms: _Optional[_Iterable[int]] = ...) -> None: ...

class LoadBalancerStatsRequest(_message.Message):
    __slots__ = ("num_rpcs", "timeout_sec", "metadata_keys")
    NUM_RPCS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SEC_FIELD_NUMBER: _ClassVar[int]
    METADATA_KEYS_FIELD_NUMBER: _ClassVar[int]
    num_rpcs: int
    timeout_sec: int
    metadata_keys: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, num_rpcs: _Optional[int] = ..., timeout_sec: _Optional[int] = ..., metadata_keys: _Optional[_Iterable[str]] = ...) -> None: ...

class LoadBalancerStatsResponse(_message.Message):
    __slots__ = ("rpcs_by_peer", "num_failures", "rpcs_by_method", "metadatas_by_peer")
    class MetadataType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNKNOWN: _ClassVar[LoadBalancerStatsResponse.MetadataType]
        INITIAL: _ClassVar[LoadBalancerStatsResponse.MetadataType]
        TRAILING: _ClassVar[LoadBalancerStatsResponse.MetadataType]
    UNKNOWN: LoadBalancerStatsResponse.MetadataType
    INITIAL: LoadBalancerStatsResponse.MetadataType
    TRAILING: LoadBalancerStatsResponse.MetadataType
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value", "type")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        TYPE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        type: LoadBalancerStatsResponse.MetadataType
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ..., type: _Optional[_Union[LoadBalancerStatsResponse.MetadataType, str]] = ...) -> None: ...
    class RpcMetadata(_message.Message):
        __slots__ = ("metadata",)
        METADATA_FIELD_NUMBER: _ClassVar[int]
        metadata: _containers.RepeatedCompositeFieldContainer[LoadBalancerStatsResponse.MetadataEntry]
        def __init__(self, metadata: _Optional[_Iterable[_Union[LoadBalancerStatsResponse.MetadataEntry, _Mapping]]] = ...) -> None: ...
    class MetadataByPeer(_message.Message):
        __slots__ = ("rpc_metadata",)
        RPC_METADATA_FIELD_NUMBER: _ClassVar[int]
        rpc_metadata: _containers.RepeatedCompositeFieldContainer[LoadBalancerStatsResponse.RpcMetadata]
        def __init__(self, rpc_metadata: _Optional[_Iterable[_Union[LoadBalancerStatsResponse.RpcMetadata, _Mapping]]] = ...) -> None: ...
    class RpcsByPeer(_message.Message):
        __slots__ = ("rpcs_by_peer",)
        class RpcsByPeerEntry(_message.Message):
            __slots__ = ("key", "value")
            KEY_FIELD_NUMBER: _ClassVar[int]
            VALUE_FIELD_NUMBER: _ClassVar[int]
            key: str
            value: int
            def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
        RPCS_BY_PEER_FIELD_NUMBER: _ClassVar[int]
        rpcs_by_peer: _containers.ScalarMap[str, int]
        def __init__(self, rpcs_by_peer: _Optional[_Mapping[str, int]] = ...) -> None: ...
    class RpcsByPeerEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class RpcsByMethodEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: LoadBalancerStatsResponse.RpcsByPeer
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[LoadBalancerStatsResponse.RpcsByPeer, _Mapping]] = ...) -> None: ...
    class MetadatasByPeerEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: LoadBalancerStatsResponse.MetadataByPeer
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[LoadBalancerStatsResponse.MetadataByPeer, _Mapping]] = ...) -> None: ...
    RPCS_BY_PEER_FIELD_NUMBER: _ClassVar[int]
    NUM_FAILURES_FIELD_NUMBER: _ClassVar[int]
    RPCS_BY_METHOD_FIELD_NUMBER: _ClassVar[int]
    METADATAS_BY_PEER_FIELD_NUMBER: _ClassVar[int]
    rpcs_by_peer: _containers.ScalarMap[str, int]
    num_failures: int
    rpcs_by_method: _containers.MessageMap[str, LoadBalancerStatsResponse.RpcsByPeer]
    metadatas_by_peer: _containers.MessageMap[str, LoadBalancerStatsResponse.MetadataByPeer]
    def __init__(self, rpcs_by_peer: _Optional[_Mapping[str, int]] = ..., num_failures: _Optional[int] = ..., rpcs_by_method: _Optional[_Mapping[str, LoadBalancerStatsResponse.RpcsByPeer]] = ..., metadatas_by_peer: _Optional[_Mapping[str, LoadBalancerStatsResponse.MetadataByPeer]] = ...) -> None: ...

class LoadBalancerAccumulatedStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LoadBalancerAccumulatedStatsResponse(_message.Message):
    __slots__ = ("num_rpcs_started_by_method", "num_rpcs_succeeded_by_method", "num_rpcs_failed_by_method", "stats_per_method")
    class NumRpcsStartedByMethodEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class NumRpcsSucceededByMethodEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class NumRpcsFailedByMethodEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    class MethodStats(_message.Message):
        __slots__ = ("rpcs_started", "result")
        class ResultEntry(_message.Message):
            __slots__ = ("key", "value")
            KEY_FIELD_NUMBER: _ClassVar[int]
            VALUE_FIELD_NUMBER: _ClassVar[int]
            key: int
            value: int
            def __init__(self, key: _Optional[int] = ..., value: _Optional[int] = ...) -> None: ...
        RPCS_STARTED_FIELD_NUMBER: _ClassVar[int]
        RESULT_FIELD_NUMBER: _ClassVar[int]
        rpcs_started: int
        result: _containers.ScalarMap[int, int]
        def __init__(self, rpcs_started: _Optional[int] = ..., result: _Optional[_Mapping[int, int]] = ...) -> None: ...
    class StatsPerMethodEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: LoadBalancerAccumulatedStatsResponse.MethodStats
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[LoadBalancerAccumulatedStatsResponse.MethodStats, _Mapping]] = ...) -> None: ...
    NUM_RPCS_STARTED_BY_METHOD_FIELD_NUMBER: _ClassVar[int]
    NUM_RPCS_SUCCEEDED_BY_METHOD_FIELD_NUMBER: _ClassVar[int]
    NUM_RPCS_FAILED_BY_METHOD_FIELD_NUMBER: _ClassVar[int]
    STATS_PER_METHOD_FIELD_NUMBER: _ClassVar[int]
    num_rpcs_started_by_method: _containers.ScalarMap[str, int]
    num_rpcs_succeeded_by_method: _containers.ScalarMap[str, int]
    num_rpcs_failed_by_method: _containers.ScalarMap[str, int]
    stats_per_method: _containers.MessageMap[str, LoadBalancerAccumulatedStatsResponse.MethodStats]
    def __init__(self, num_rpcs_started_by_method: _Optional[_Mapping[str, int]] = ..., num_rpcs_succeeded_by_method: _Optional[_Mapping[str, int]] = ..., num_rpcs_failed_by_method: _Optional[_Mapping[str, int]] = ..., stats_per_method: _Optional[_Mapping[str, LoadBalancerAccumulatedStatsResponse.MethodStats]] = ...) -> None: ...

class ClientConfigureRequest(_message.Message):
    __slots__ = ("types", "metadata", "timeout_sec")
    class RpcType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        EMPTY_CALL: _ClassVar[ClientConfigureRequest.RpcType]
        UNARY_CALL: _ClassVar[ClientConfigureRequest.RpcType]
    EMPTY_CALL: ClientConfigureRequest.RpcType
    UNARY_CALL: ClientConfigureRequest.RpcType
    class Metadata(_message.Message):
        __slots__ = ("type", "key", "value")
        TYPE_FIELD_NUMBER: _ClassVar[int]
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        type: ClientConfigureRequest.RpcType
        key: str
        value: str
        def __init__(self, type: _Optional[_Union[ClientConfigureRequest.RpcType, str]] = ..., key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TYPES_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SEC_FIELD_NUMBER: _ClassVar[int]
    types: _containers.RepeatedScalarFieldContainer[ClientConfigureRequest.RpcType]
    metadata: _containers.RepeatedCompositeFieldContainer[ClientConfigureRequest.Metadata]
    timeout_sec: int
    def __init__(self, types: _Optional[_Iterable[_Union[ClientConfigureRequest.RpcType, str]]] = ..., metadata: _Optional[_Iterable[_Union[ClientConfigureRequest.Metadata, _Mapping]]] = ..., timeout_sec: _Optional[int] = ...) -> None: ...

class ClientConfigureResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MemorySize(_message.Message):
    __slots__ = ("rss",)
    RSS_FIELD_NUMBER: _ClassVar[int]
    rss: int
    def __init__(self, rss: _Optional[int] = ...) -> None: ...

class TestOrcaReport(_message.Message):
    __slots__ = ("cpu_utilization", "memory_utilization", "request_cost", "utilization")
    class RequestCostEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class UtilizationEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    CPU_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_COST_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    cpu_utilization: float
    memory_utilization: float
    request_cost: _containers.ScalarMap[str, float]
    utilization: _containers.ScalarMap[str, float]
    def __init__(self, cpu_utilization: _Optional[float] = ..., memory_utilization: _Optional[float] = ..., request_cost: _Optional[_Mapping[str, float]] = ..., utilization: _Optional[_Mapping[str, float]] = ...) -> None: ...

class HookRequest(_message.Message):
    __slots__ = ("command", "grpc_code_to_return", "grpc_status_description", "server_port")
    class HookRequestCommand(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        UNSPECIFIED: _ClassVar[HookRequest.HookRequestCommand]
        START: _ClassVar[HookRequest.HookRequestCommand]
        STOP: _ClassVar[HookRequest.HookRequestCommand]
        RETURN: _ClassVar[HookRequest.HookRequestCommand]
    UNSPECIFIED: HookRequest.HookRequestCommand
    START: HookRequest.HookRequestCommand
    STOP: HookRequest.HookRequestCommand
    RETURN: HookRequest.HookRequestCommand
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    GRPC_CODE_TO_RETURN_FIELD_NUMBER: _ClassVar[int]
    GRPC_STATUS_DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    SERVER_PORT_FIELD_NUMBER: _ClassVar[int]
    command: HookRequest.HookRequestCommand
    grpc_code_to_return: int
    grpc_status_description: str
    server_port: int
    def __init__(self, command: _Optional[_Union[HookRequest.HookRequestCommand, str]] = ..., grpc_code_to_return: _Optional[int] = ..., grpc_status_description: _Optional[str] = ..., server_port: _Optional[int] = ...) -> None: ...

class HookResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...
