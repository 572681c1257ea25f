"""Jobs from request to delivery: the pipeline, derived jobs, storyboards, batch manifests, shared waits, the sweep."""
