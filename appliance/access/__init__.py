"""Access control: who a caller is (users, sessions, API keys), what they may read (ACL rules), how
often they may ask (limits), the audit trail of what they did, and secrets."""
