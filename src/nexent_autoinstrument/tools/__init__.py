"""The tools around the agent: the mock LLM (``mock``), the demo, the doctor and the /metrics
summariser (``promtext``). The agent never imports them (``tests/test_layout.py`` checks it);
``nexent-autoinstrument mock-llm|demo|doctor`` (``cli.py``) runs them."""
