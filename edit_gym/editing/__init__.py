"""What one edit needs: captured keys and value-gradients, update rules, and the scores."""
