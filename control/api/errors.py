"""What goes wrong in an API request, independent of dialect: each dialect renders an
ApiError in its own error shape."""


class ApiError(Exception):
    """status with (field or None, message) problems; `resource`/`resource_id` for 404s."""

    def __init__(self, status: int, problems: list[tuple[str | None, str]],
                 resource: str | None = None, resource_id: object = None):
        self.status = status
        self.problems = problems or [(None, "error")]
        self.resource = resource
        self.resource_id = resource_id
        super().__init__("; ".join(f"{f}: {m}" if f else m for f, m in self.problems))

    @classmethod
    def bad_request(cls, field: str | None, message: str) -> "ApiError":
        return cls(400, [(field, message)])

    @classmethod
    def not_found(cls, resource: str, resource_id: object) -> "ApiError":
        return cls(404, [(None, "Not found")], resource, resource_id)

    @classmethod
    def conflict(cls, message: str, resource: str | None = None, resource_id: object = None) -> "ApiError":
        return cls(412, [(None, message)], resource, resource_id)
