-- Delivery ids compared byte by byte: an occurrence's deliveries are the ids between
-- `{occurrence}:` and `{occurrence};`, a range the primary key serves only in the "C"
-- order (a language collation orders ':' and ';' elsewhere and would also slow every
-- comparison). Rebuilds the primary key's index; the rows are not rewritten.
ALTER TABLE deliveries ALTER COLUMN id SET DATA TYPE TEXT COLLATE "C";
