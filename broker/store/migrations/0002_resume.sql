-- cloudseat schema, version 2: a seat resumes a session it lost through no fault of its own, ahead of the queue.
-- Invariants:
--   * a resume is of a session of the same seat      (foreign key resumes_same_seat)
--   * a lost session is resumed at most once          (unique constraint resumed_once)
--   * the queue is: resumes first, then oldest first  (index sessions_queue; every reader orders the same way)

ALTER TABLE sessions ADD CONSTRAINT session_of_seat UNIQUE (session_id, venue_id, seat_id);

ALTER TABLE sessions ADD COLUMN resumes uuid;
ALTER TABLE sessions
    ADD CONSTRAINT resumes_same_seat FOREIGN KEY (resumes, venue_id, seat_id)
        REFERENCES sessions (session_id, venue_id, seat_id),
    ADD CONSTRAINT resumed_once UNIQUE (resumes),
    ADD CONSTRAINT resumes_another CHECK (resumes <> session_id);

DROP INDEX sessions_pending;
CREATE INDEX sessions_queue ON sessions ((resumes IS NULL), created_at, session_id) WHERE state = 'PENDING';
