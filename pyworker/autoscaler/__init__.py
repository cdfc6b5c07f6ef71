"""The autoscaler (Vast.ai serverless): signed request envelopes (:mod:`.auth`) and status reports
(:mod:`.reports`). Knows the autoscaler only."""
