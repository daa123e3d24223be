"""Wire formats shared by the twin and the mappers: resources, topics, messages, specs.

No I/O lives here; every other layer may import it.
"""
