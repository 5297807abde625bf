"""The toy world's model side: training the base model, the attribute classifier, and the evaluation."""
