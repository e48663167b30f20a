"""Framework adapters (AutoGen, CrewAI, LangGraph) that put agent teams behind ostracon.

Each adapter lives in its own module, ``ostracon.adapters.<framework>``, and is imported only
when its framework is installed (``pip install ostracon[<framework>]``).
"""
