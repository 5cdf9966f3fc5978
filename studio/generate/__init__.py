"""The Generate panel: continue / regenerate with the policy host, stream candidates as ghost notes,
audition, compare, accept (one undo step), live MAA scores, reward-guided search and history."""
