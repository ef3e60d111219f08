"""The queue: the Dramatiq broker, publishing task ids, the actor that evaluates them, and the sweeper."""
