-- 0010: a placeholder on this branch only: another change takes 0010, and
-- this file gives way to it when the two are merged (migrations are
-- numbered without gaps).
SELECT 1;
