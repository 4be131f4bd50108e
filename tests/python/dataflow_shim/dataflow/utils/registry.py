"""The operator registry, reduced to what the operators' decorators need."""


class _Registry:
    def __init__(self):
        self._ops = {}

    def register(self):
        def deco(cls):
            self._ops[cls.__name__] = cls
            return cls
        return deco

    def get(self, name):
        return self._ops.get(name)


OPERATOR_REGISTRY = _Registry()
