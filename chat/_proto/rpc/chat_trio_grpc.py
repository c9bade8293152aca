"""trio_grpc servicers and stubs for rpc/chat.proto; written by protoc-gen-trio_grpc: do not edit."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator

import trio_grpc
from chat._proto.rpc import chat_pb2 as rpc_dot_chat__pb2

__all__ = ["ChatServiceBase", "ChatServiceStub"]


class ChatServiceBase(abc.ABC):
    """Servicer of rpc.ChatService: implement every method, serve with `Server([servicer.bind()])`."""

    @abc.abstractmethod
    async def Chat(
        self, requests: AsyncIterator[rpc_dot_chat__pb2.ChatMessage], context: trio_grpc.ServicerContext
    ) -> None:
        """Send each response with `await context.send(response)`; return None."""

    @abc.abstractmethod
    async def CreateChatRoom(
        self, request: rpc_dot_chat__pb2.CreateChatRoomRequest, context: trio_grpc.ServicerContext
    ) -> rpc_dot_chat__pb2.ChatRoom:
        """Return the response."""

    @abc.abstractmethod
    async def ListChatRooms(
        self, request: rpc_dot_chat__pb2.ListChatRoomsRequest, context: trio_grpc.ServicerContext
    ) -> rpc_dot_chat__pb2.ListChatRoomsResponse:
        """Return the response."""

    @abc.abstractmethod
    async def DeleteChatRoom(
        self, request: rpc_dot_chat__pb2.DeleteChatRoomRequest, context: trio_grpc.ServicerContext
    ) -> rpc_dot_chat__pb2.ChatRoom:
        """Return the response."""

    @abc.abstractmethod
    async def Listen(
        self, request: rpc_dot_chat__pb2.ListenRequest, context: trio_grpc.ServicerContext
    ) -> None:
        """Send each response with `await context.send(response)`; return None."""

    @abc.abstractmethod
    async def Post(
        self, requests: AsyncIterator[rpc_dot_chat__pb2.PostRequest], context: trio_grpc.ServicerContext
    ) -> rpc_dot_chat__pb2.PostSummary:
        """Return the response."""

    def bind(self) -> trio_grpc.ServiceBinding:
        return trio_grpc.bind_service(
            rpc_dot_chat__pb2.DESCRIPTOR.services_by_name["ChatService"], self
        )


class ChatServiceStub:
    """Client of rpc.ChatService: `ChatServiceStub(channel)`, one typed method per RPC."""

    def __init__(self, channel: trio_grpc.Channel) -> None:
        methods = rpc_dot_chat__pb2.DESCRIPTOR.services_by_name["ChatService"].methods_by_name
        self.Chat: trio_grpc.StreamStreamMethod[rpc_dot_chat__pb2.ChatMessage, rpc_dot_chat__pb2.Message] = trio_grpc.StreamStreamMethod(
            channel, methods["Chat"]
        )
        self.CreateChatRoom: trio_grpc.UnaryUnaryMethod[rpc_dot_chat__pb2.CreateChatRoomRequest, rpc_dot_chat__pb2.ChatRoom] = trio_grpc.UnaryUnaryMethod(
            channel, methods["CreateChatRoom"]
        )
        self.ListChatRooms: trio_grpc.UnaryUnaryMethod[rpc_dot_chat__pb2.ListChatRoomsRequest, rpc_dot_chat__pb2.ListChatRoomsResponse] = trio_grpc.UnaryUnaryMethod(
            channel, methods["ListChatRooms"]
        )
        self.DeleteChatRoom: trio_grpc.UnaryUnaryMethod[rpc_dot_chat__pb2.DeleteChatRoomRequest, rpc_dot_chat__pb2.ChatRoom] = trio_grpc.UnaryUnaryMethod(
            channel, methods["DeleteChatRoom"]
        )
        self.Listen: trio_grpc.UnaryStreamMethod[rpc_dot_chat__pb2.ListenRequest, rpc_dot_chat__pb2.Message] = trio_grpc.UnaryStreamMethod(
            channel, methods["Listen"]
        )
        self.Post: trio_grpc.StreamUnaryMethod[rpc_dot_chat__pb2.PostRequest, rpc_dot_chat__pb2.PostSummary] = trio_grpc.StreamUnaryMethod(
            channel, methods["Post"]
        )
