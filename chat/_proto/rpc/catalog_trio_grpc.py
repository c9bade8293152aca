"""trio_grpc servicers and stubs for rpc/catalog.proto; written by protoc-gen-trio_grpc: do not edit."""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator

import trio_grpc
from chat._proto.rpc import catalog_pb2 as rpc_dot_catalog__pb2

__all__ = ["CatalogBase", "CatalogStub"]


class CatalogBase(abc.ABC):
    """Servicer of rpc.Catalog: implement every method, serve with `Server([servicer.bind()])`."""

    @abc.abstractmethod
    async def ListProducts(
        self, request: rpc_dot_catalog__pb2.ListProductsRequest, context: trio_grpc.ServicerContext
    ) -> rpc_dot_catalog__pb2.ProductList:
        """Return the response."""

    @abc.abstractmethod
    async def GetProduct(
        self, request: rpc_dot_catalog__pb2.GetProductRequest, context: trio_grpc.ServicerContext
    ) -> rpc_dot_catalog__pb2.Product:
        """Return the response."""

    @abc.abstractmethod
    async def CreateProduct(
        self, request: rpc_dot_catalog__pb2.CreateProductRequest, context: trio_grpc.ServicerContext
    ) -> rpc_dot_catalog__pb2.Product:
        """Return the response."""

    @abc.abstractmethod
    async def DeleteProduct(
        self, request: rpc_dot_catalog__pb2.DeleteProductRequest, context: trio_grpc.ServicerContext
    ) -> rpc_dot_catalog__pb2.Product:
        """Return the response."""

    def bind(self) -> trio_grpc.ServiceBinding:
        return trio_grpc.bind_service(
            rpc_dot_catalog__pb2.DESCRIPTOR.services_by_name["Catalog"], self
        )


class CatalogStub:
    """Client of rpc.Catalog: `CatalogStub(channel)`, one typed method per RPC."""

    def __init__(self, channel: trio_grpc.Channel) -> None:
        methods = rpc_dot_catalog__pb2.DESCRIPTOR.services_by_name["Catalog"].methods_by_name
        self.ListProducts: trio_grpc.UnaryUnaryMethod[rpc_dot_catalog__pb2.ListProductsRequest, rpc_dot_catalog__pb2.ProductList] = trio_grpc.UnaryUnaryMethod(
            channel, methods["ListProducts"]
        )
        self.GetProduct: trio_grpc.UnaryUnaryMethod[rpc_dot_catalog__pb2.GetProductRequest, rpc_dot_catalog__pb2.Product] = trio_grpc.UnaryUnaryMethod(
            channel, methods["GetProduct"]
        )
        self.CreateProduct: trio_grpc.UnaryUnaryMethod[rpc_dot_catalog__pb2.CreateProductRequest, rpc_dot_catalog__pb2.Product] = trio_grpc.UnaryUnaryMethod(
            channel, methods["CreateProduct"]
        )
        self.DeleteProduct: trio_grpc.UnaryUnaryMethod[rpc_dot_catalog__pb2.DeleteProductRequest, rpc_dot_catalog__pb2.Product] = trio_grpc.UnaryUnaryMethod(
            channel, methods["DeleteProduct"]
        )
