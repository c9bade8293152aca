from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChatMessage(_message.Message):
    __slots__ = ("join", "message")
    JOIN_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    join: JoinChat
    message: Message
    def __init__(self, join: _Optional[_Union[JoinChat, _Mapping]] = ..., message: _Optional[_Union[Message, _Mapping]] = ...) -> None: ...

class JoinChat(_message.Message):
    __slots__ = ("room_id", "name")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    name: str
    def __init__(self, room_id: _Optional[str] = ..., name: _Optional[str] = ...) -> None: ...

class Message(_message.Message):
    __slots__ = ("name", "message")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    message: str
    def __init__(self, name: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class ChatRoom(_message.Message):
    __slots__ = ("room_id",)
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    def __init__(self, room_id: _Optional[str] = ...) -> None: ...

class CreateChatRoomRequest(_message.Message):
    __slots__ = ("private",)
    PRIVATE_FIELD_NUMBER: _ClassVar[int]
    private: bool
    def __init__(self, private: _Optional[bool] = ...) -> None: ...

class ListChatRoomsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListChatRoomsResponse(_message.Message):
    __slots__ = ("chat_rooms",)
    CHAT_ROOMS_FIELD_NUMBER: _ClassVar[int]
    chat_rooms: _containers.RepeatedCompositeFieldContainer[ChatRoom]
    def __init__(self, chat_rooms: _Optional[_Iterable[_Union[ChatRoom, _Mapping]]] = ...) -> None: ...

class DeleteChatRoomRequest(_message.Message):
    __slots__ = ("room_id",)
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    def __init__(self, room_id: _Optional[str] = ...) -> None: ...

class ListenRequest(_message.Message):
    __slots__ = ("room_id",)
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    def __init__(self, room_id: _Optional[str] = ...) -> None: ...

class PostRequest(_message.Message):
    __slots__ = ("room_id", "message")
    ROOM_ID_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    room_id: str
    message: Message
    def __init__(self, room_id: _Optional[str] = ..., message: _Optional[_Union[Message, _Mapping]] = ...) -> None: ...

class PostSummary(_message.Message):
    __slots__ = ("accepted",)
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    accepted: int
    def __init__(self, accepted: _Optional[int] = ...) -> None: ...
