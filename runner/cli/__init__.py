"""``python -m runner``: the command line, the only layer that prints.

``_main`` parses arguments and decides exit codes; each subcommand lives in its
own module (``_submit``, ``_submit_remote``, ``_worker``, ``_config``,
``_providers``, ``_metrics``) and is imported only when it runs.
"""
