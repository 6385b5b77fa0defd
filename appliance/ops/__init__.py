"""Operations: doctor, retrieval evaluation, backup and restore, the air-gapped bundle, store migration."""
