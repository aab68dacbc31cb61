"""The config file: discovery, YAML with positions, ``${VAR}`` expansion, validation.

``_model`` says what a valid config is (msgspec Structs; the provider entry is
``workers.ProviderConfig``), ``_yaml`` parses with line/column positions,
``_env`` expands variables, ``_schema`` checks the parsed tree against the
Structs, and ``_load`` ties them together (``load``, ``discover``).
"""
