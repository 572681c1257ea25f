"""Where things are kept: delivered videos (local or S3), receipts of paid jobs, the ledger, listings."""
