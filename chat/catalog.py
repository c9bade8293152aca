"""rpc.Catalog on trio_grpc: an in-memory product store, seeded with product 123 "Rice Cooker".

Every operation is synchronous between the request and the response, so Trio's one-task-at-a-time
scheduling makes each one atomic without a lock.
"""

from __future__ import annotations

from chat._proto.rpc import catalog_pb2, catalog_trio_grpc
from trio_grpc import RpcError, ServicerContext, StatusCode

__all__ = ["CatalogService"]

DEFAULT_PAGE_SIZE = 10
MAX_PAGE_SIZE = 100
MAX_PRODUCT_ID = 2**63 - 1  # int64


class CatalogService(catalog_trio_grpc.CatalogBase):
    """Handlers for every rpc.Catalog method; at most `max_products` products (more: RESOURCE_EXHAUSTED)."""

    def __init__(self, *, max_products: int = 10_000) -> None:
        self.max_products = max_products
        self._products = {123: catalog_pb2.Product(product_id=123, name="Rice Cooker")}

    async def ListProducts(
        self, request: catalog_pb2.ListProductsRequest, context: ServicerContext
    ) -> catalog_pb2.ProductList:
        index = request.pagination_parameters.index
        page_size = request.pagination_parameters.page_size
        if index < 0 or page_size < 0:
            raise RpcError(
                StatusCode.INVALID_ARGUMENT,
                f"index and page_size must not be negative (got {index} and {page_size})",
            )
        page_size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        ids = sorted(self._products)[index * page_size : (index + 1) * page_size]
        return catalog_pb2.ProductList(products=[self._products[i] for i in ids])

    async def GetProduct(
        self, request: catalog_pb2.GetProductRequest, context: ServicerContext
    ) -> catalog_pb2.Product:
        return self._existing(request.product_id)

    async def CreateProduct(
        self, request: catalog_pb2.CreateProductRequest, context: ServicerContext
    ) -> catalog_pb2.Product:
        product = catalog_pb2.Product()
        product.CopyFrom(request.product)
        if product.product_id == 0:
            highest = max(self._products, default=0)
            if highest == MAX_PRODUCT_ID:
                raise RpcError(
                    StatusCode.OUT_OF_RANGE,
                    f"no product id is left above {highest}; give the new product an id",
                )
            product.product_id = highest + 1
        if product.product_id in self._products:
            raise RpcError(StatusCode.ALREADY_EXISTS, f"product {product.product_id} already exists")
        if len(self._products) >= self.max_products:
            raise RpcError(
                StatusCode.RESOURCE_EXHAUSTED,
                f"the catalog is full ({self.max_products} products); delete one first",
            )
        self._products[product.product_id] = product
        return product

    async def DeleteProduct(
        self, request: catalog_pb2.DeleteProductRequest, context: ServicerContext
    ) -> catalog_pb2.Product:
        product = self._existing(request.product_id)
        del self._products[request.product_id]
        return product

    def _existing(self, product_id: int) -> catalog_pb2.Product:
        try:
            return self._products[product_id]
        except KeyError:
            raise RpcError(StatusCode.NOT_FOUND, f"product {product_id} does not exist") from None
