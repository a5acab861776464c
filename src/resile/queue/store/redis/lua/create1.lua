-- create, one task (a single-call enqueue): create.lua's steps for n = 1, as a script of
-- its own so that it carries none of the batch bookkeeping (Redis runs a script's whole
-- text, closures included, on every call). Arguments: as create.lua's.
return create_one(REST - 1, A.now_s, A.op, A.if_exists)
