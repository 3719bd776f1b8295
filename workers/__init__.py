"""Dramatiq broker, actors, the scheduler and the embedded stack.  Depends on ``dispatcher``;
``dispatcher`` never imports this package (its CLI finds our commands through the
``dispatcher.cli`` entry point group)."""
