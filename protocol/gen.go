package protocol

// Regenerate the wire types after editing protocol/proto/**.proto
// (needs protoc from Debian's protobuf-compiler, protoc-gen-go and
// protoc-gen-go-vtproto, whose marshal, unmarshal and size methods
// internal/protoenc uses, and whose CloneVT copies messages without
// reflection; .ci/run installs all three):
//
//go:generate sh -c "protoc -I proto --go_out=pb --go_opt=paths=source_relative --go-vtproto_out=pb --go-vtproto_opt=paths=source_relative,features=marshal+unmarshal+size+clone proto/hadoop/*.proto proto/hdfs/*.proto && mv pb/hadoop/*.go pb/hdfs/*.go pb/ && rmdir pb/hadoop pb/hdfs"
