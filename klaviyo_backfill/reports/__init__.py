"""What a person reads: the dry-run preview, summaries and tables (terminal), progress while a
send runs, the job list, and the one-file HTML reports."""
