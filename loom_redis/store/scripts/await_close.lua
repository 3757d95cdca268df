-- Register a waiter for the workflow's close: a result() that cannot count on the
-- registration of the workflow's start (its notice may have expired) sends this and, in
-- the same round trip, blocks on the close notice list (see push_close_notice). An open
-- workflow is marked so that its closing commit pushes the notice; a closed one gets its
-- notice now if it has none; an unknown id gets a notice that ends the wait at once (and
-- lives a second: a workflow started by that id later drops it here).
-- Returns the status ('' if there is no such workflow).
-- KEYS: meta, history, close notice
local meta, notice = KEYS[1], KEYS[3]
expect_types({meta, 'hash', KEYS[2], 'stream', notice, 'list'})
local status = redis.call('HGET', meta, 'status')
if not status then
  if redis.call('EXISTS', notice) == 0 then
    redis.call('RPUSH', notice, NO_WORKFLOW)
    redis.call('PEXPIRE', notice, 1000)
  end
  return ''
end
if not TERMINAL[status] then
  redis.call('HSET', meta, 'waited', '1')
  redis.call('LTRIM', notice, 1, 0)  -- empties it
elseif redis.call('EXISTS', notice) == 0 or redis.call('LINDEX', notice, 0) == NO_WORKFLOW then
  push_close_notice(notice, closing_entry(KEYS[2]))
end
return status
