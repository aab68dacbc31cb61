"""Adapters that let other frameworks run their model calls through runner.

``langchain`` (:class:`~runner.integrations.langchain.RunnerChatModel`, a
LangChain chat model) and ``langgraph`` (runner's workflows as LangGraph
graphs) need the ``langgraph`` extra: ``pip install 'runner[langgraph]'``.
They are built on runner's public API only; ``_host`` serves a Runner from a
thread of its own for models that own one.  Importing this package imports
neither framework.
"""
