"""What lasts between runs: a job's checkpoint, the account's ledger, the lock that lets a job
run once, the failures file, and private files in the user's state folder."""
